"""Training: every option declared once (options), built-in and user presets, the step calculator, and the two
TOML files sd-scripts reads (config). Pure logic: nothing here imports torch or starts a process."""
