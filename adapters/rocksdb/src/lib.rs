//! RocksDB WAL adapter (in progress).
