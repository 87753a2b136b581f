-- DP 版：製品別の有害事象発現率
-- DP version: adverse-event rates by product. Each count is noised; the rate is computed
-- from the noisy counts (post-processing, no extra privacy cost, no interval).
SELECT
    t.product_code,
    count(DISTINCT t.pid) AS treated_patients,
    count(DISTINCT ae.pid) AS patients_with_ae,
    count(DISTINCT ae.pid) FILTER (WHERE ae.serious) AS patients_with_serious_ae,
    count(DISTINCT ae.pid) * 100.0 / count(DISTINCT t.pid) AS ae_rate_percent
FROM regen_treatment AS t
LEFT JOIN adverse_event AS ae
    ON ae.pid = t.pid AND ae.product_code = t.product_code
GROUP BY t.product_code
ORDER BY t.product_code
