"""A tiny Django project served by real gunicorn workers in the lifecycle tests.

Configured from the environment (``LIFECYCLE_*``) by the test that starts it, so each test
gets its own application_name and state directory.
"""
