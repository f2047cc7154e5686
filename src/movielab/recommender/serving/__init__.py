"""Serving: `/recommend/<user>` on the hot path, live swaps, versions on disk, admin and explain, the traffic
split, replicas behind nginx, and the random placeholder service.
"""
