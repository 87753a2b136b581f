-- PMS: adverse events by product, event term and seriousness (seed 001: yearly operations report).
-- 製造販売後調査: 製品別・事象名別・重篤度別の有害事象
SELECT product_code, event_term, serious, COUNT(*) AS events, COUNT(DISTINCT pid) AS patients
FROM adverse_event
GROUP BY product_code, event_term, serious
ORDER BY product_code, event_term, serious
