-- Patients with each event term, by product (item 12: 有害事象・不具合事象別発生症例数).
-- A patient with two terms counts under each: these cells do not add up to a total.
SELECT product_code, event_term, COUNT(DISTINCT pid) AS n
FROM adverse_event
WHERE fiscal_year = {fy}
GROUP BY product_code, event_term
