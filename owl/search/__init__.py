"""Collection search: an index of per-box image encodings, searched with the class head.

index.py (`Index`: add, remove, prune, search), store.py (the SQLite file), ranking.py (which
boxes an image keeps), vectors.py (exact and FAISS search), negatives.py (the negative-query
rule), gallery.py (the HTML results page). Documentation for users: docs/search.md.
"""
