"""A site's PACS as a data source and as the destination of synthetic series.

    remote.py    what a query matched (series, instances) and the one error type
    dicomweb.py  QIDO-RS / WADO-RS / STOW-RS with dicomweb-client
    dimse.py     C-FIND / C-GET / C-STORE with pynetdicom
    cache.py     the site's local copy beside site.toml: staged, then committed whole
    sync.py      query, fetch only what is new, drop what the PACS no longer lists
    store.py     synthetic series back to the PACS, never overwriting, recorded in the audit log
"""
