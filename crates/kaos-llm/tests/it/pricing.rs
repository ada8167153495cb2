//! Price table and cost.
