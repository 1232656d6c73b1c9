"""Shared helpers for Switchboard's Python e2e and conformance suites."""
