"""Tests that open the HTML report in headless Chromium."""
