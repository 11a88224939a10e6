//! Replay from files: formats, bad input, orders.

mod files;
mod offsets;
mod same_logic;
