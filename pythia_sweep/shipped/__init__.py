"""The task files and run configs that come with the package, found by name (config.locate)."""
