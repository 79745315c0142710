//! The `files` plugin (being written).
