"""Human labeling: `tether label` serves a local page where a person picks the better of two responses.

`server` is the command (config, listening, the uvicorn lifecycle); `pairs` reads
what is shown; `store` is the locked, append-only label file and one labeler's
answers; `guard` checks every request and `routes` are the page and its API.
`stats` reads label files, applies undo records and computes agreement
statistics; `stats_command` is `tether label stats`.
"""
