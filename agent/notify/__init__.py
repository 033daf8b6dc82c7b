"""Notifications: channels behind one small interface, an outbox in the state store, delivery apart from
any run or alert."""
