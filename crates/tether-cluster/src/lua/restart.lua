-- ARGV: P node. A node starting under a name it had before holds none of
-- that name's sessions any more: they become orphans (fence raised), kept
-- for their grace from now for a resume anywhere. Returns how many.
return #orphan_all(ARGV[2], now_ms())
