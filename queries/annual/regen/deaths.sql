-- Deaths (adverse events with outcome death in the fiscal year), by product (item 12: 死亡症例数).
SELECT product_code, COUNT(DISTINCT pid) AS n
FROM adverse_event
WHERE fiscal_year = {fy} AND outcome = 'death'
GROUP BY product_code
