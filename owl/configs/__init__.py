"""Training recipes shipped with owl: one Python file per recipe, each with `get_config()`.

They are plain files, loaded by path (`owl.train.config.load_config`), never imported as modules of
this package; the folder is a package only so that a wheel carries it. `owl train --config NAME`
takes a file name from here without ".py" (`owl.train.config.recipe_names` lists them).
"""
