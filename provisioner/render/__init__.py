"""What the commands show: text reports, live progress, tables, and the versioned --json shapes."""
