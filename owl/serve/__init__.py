"""`owl serve`: a local web page and JSON API over one `owl.Detector` (needs the [serve] extra).

app.py builds the FastAPI app (routes only), store.py keeps uploaded images and their encodings
(bounded LRU), requests.py turns request bodies into Detector queries and options, guard.py
refuses foreign Host/Origin headers and oversized bodies, static/ holds the page.
"""
