-- DP 版：発症年齢階級別の ALSFRS-R 平均（0–48 に制限）と患者数
-- DP version: mean ALSFRS-R (clamped to its catalogue bounds 0–48) and patients by
-- age-at-onset band. The band is a CASE with constant results, so its domain is public.
SELECT
    CASE
        WHEN onset_age < 40 THEN '00-39'
        WHEN onset_age < 50 THEN '40-49'
        WHEN onset_age < 60 THEN '50-59'
        WHEN onset_age < 70 THEN '60-69'
        ELSE '70+'
    END AS onset_age_band,
    count(DISTINCT pid) AS patients,
    avg(alsfrs_r) AS mean_alsfrs_r
FROM (
    SELECT
        v.pid,
        v.alsfrs_r,
        date_part('year', v.visit_date) - v.months_since_onset / 12.0 - p.birth_year AS onset_age
    FROM als_visit AS v
    JOIN patient AS p ON p.pid = v.pid
    WHERE v.alsfrs_r IS NOT NULL
) AS visits
GROUP BY 1
ORDER BY 1
