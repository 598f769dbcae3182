"""Publish/subscribe for events: in-process or Redis Streams, fed by the transactional outbox."""
