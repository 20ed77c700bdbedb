"""Stages 1–3, per feed: fetch → parse → clean (``feeds.ingest`` runs them).

``fetch`` (HTTP within limits, never into the network: ``egress``) → ``parse``
(feedparser; ``jsonfeed``) → ``clean`` (plain-text titles, allow-listed HTML, absolute
links: ``links``, repaired text: ``mojibake``). Each feed's outcome is a value; one
feed's failure is never another's.
"""
