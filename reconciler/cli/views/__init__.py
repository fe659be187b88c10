"""What the commands show: JSON-ready views and their rendering for people (tables, colour on a TTY).

- `status`  the fleet, one node or one service as `plumb status` shows it
- `plan`    a review as text, as a pull-request comment (markdown) or as JSON
"""
