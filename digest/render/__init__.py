"""Stage 5: a ``Selection`` → the edition's subject, text and HTML parts (``edition``).

Jinja2 templates over plain view objects (``views``), translated and localized
(``i18n``), kept under the size budget (``budget``); ``sample`` is the edition shown
when there is nothing real to show (previews, ``digest check``).
"""
