#![allow(dead_code)]
pub mod daemon;
pub mod pg;
pub mod sim;
