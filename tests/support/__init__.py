"""Reusable test harnesses (real servers, no mocks)."""
