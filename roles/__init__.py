"""Built-in roles (YAML resource lists); shipped inside the wheel as provisioner.roles."""
