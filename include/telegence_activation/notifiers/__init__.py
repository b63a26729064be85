"""Notifiers: tell the customer a bulk change is finished."""
