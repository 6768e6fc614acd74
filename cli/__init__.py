"""owl's command-line interface (installed as the package `owl.cli`, command `owl`)."""
