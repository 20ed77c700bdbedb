"""The rules of the mail format, shared by render, deliver, state and the config.

``addresses`` (one check for every address, IDNA on the wire), ``headers`` (no outside
text can make or break a header) and ``markers`` (the personal values of a message,
filled in per recipient). Pure and Jinja-free.
"""
