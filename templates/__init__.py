"""Built-in jinja2 templates; shipped inside the wheel as provisioner.templates."""
