"""End-to-end recipes that chain data, training and evaluation (the top of the library's import
graph: a recipe may import any part of `owl`, nothing in `owl` imports a recipe)."""
