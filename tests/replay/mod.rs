//! Replay from files: formats, bad input, orders.

mod files;
mod same_logic;
