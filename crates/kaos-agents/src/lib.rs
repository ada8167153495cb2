//! Agent runtime of kaos (being written).
