"""The SFU: media worker processes that forward WebRTC packets from publishers to viewers."""
