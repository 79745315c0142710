//! The `http` plugin (being written).
