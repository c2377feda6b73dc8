"""Reusable constructs of the serving stack: each builds one logical unit; the stack composes them."""
