//! The `mail` plugin (being written).
