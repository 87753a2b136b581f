-- Registered cases by product and 5-year age band at treatment. / 製品別・年齢階級別登録症例数
SELECT product_code, age_band, COUNT(DISTINCT pid) AS n
FROM regen_treatment
WHERE fiscal_year = {fy}
GROUP BY product_code, age_band
