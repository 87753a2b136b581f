-- Adverse events by product and event term (item 12: 有害事象・不具合事象別発生件数).
SELECT product_code, event_term, COUNT(*) AS n
FROM adverse_event
WHERE fiscal_year = {fy}
GROUP BY product_code, event_term
