"""The edge: WHIP/WHEP handlers and the Socket.IO namespace of a live room."""
