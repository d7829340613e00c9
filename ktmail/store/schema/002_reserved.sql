-- Placeholder for migration 002, which belongs to the mail store. This file
-- only keeps the numbering without gaps until that migration lands; it
-- changes nothing and is replaced by the real 002 file.
SELECT 1;
