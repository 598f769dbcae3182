"""Tests run real peers, real databases and a real browser."""
