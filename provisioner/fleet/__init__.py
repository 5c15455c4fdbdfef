"""Fleets: an inventory of hosts, fleet-wide drift, and batched rollouts with canary, max-fail and rollback."""
