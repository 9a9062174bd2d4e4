"""Built-in environments that ship with tether, so a demo needs no download.

`assistant`: a synthetic chat task (arithmetic, capitals, how-to, edgy and
harmful asks) with response styles, a gold utility that parses any response,
and a noisy, biased gold labeler standing in for a human (DESIGN §5).
"""
