"""Speed benchmarks that report ratios measured side by side (`python -m benchmarks`, `make bench`)."""
