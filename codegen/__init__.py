"""Code generator: renders spec/tofu.toml into the modules of generated/."""
