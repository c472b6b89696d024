"""What holds the Rust side to the Python reference: the fixture bundle and its goldens, the metrics' goldens, and
the ARM parity check. scripts/arm-parity runs the last on the system Python with the standard library only, so this
file imports nothing."""
