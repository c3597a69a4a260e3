//! SQLite WAL adapter (in progress).
