"""The scene spec: YAML -> a checked, resolved ``Plan``; it parses and checks files and runs no model."""
