"""One module per area of the CLI; each exposes click commands that ``trainserve.cli`` registers."""
