//! The `report` plugin (being written).
