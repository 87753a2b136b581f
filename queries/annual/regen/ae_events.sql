-- Adverse events with onset in the fiscal year, by product (item 12: 有害事象・不具合発生件数).
SELECT product_code, COUNT(*) AS n
FROM adverse_event
WHERE fiscal_year = {fy}
GROUP BY product_code
