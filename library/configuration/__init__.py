"""Configuration: options declared once, YAML sets with inheritance, the command line."""
