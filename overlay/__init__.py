"""The overlay around a live show: pinned products, chat with moderation and presence, kept in the database
so any node rebuilds a room's snapshot from it (the Socket.IO edge is `signaling/overlay_room.py`)."""
